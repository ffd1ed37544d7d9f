set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_lm_load_row1.png.tmp.25646'
$m << EOD
0.121619 0.138159 0.133032 0.163721 0.0809204 0.0950684 0.139258 0.128223
0.134106 0.124109 0.119861 0.127368 0.0641479 0.171863 0.152161 0.106384
EOD
set title "Token choice, k=2: load (last epoch, first seed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle
