set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_vision_load_row5.png.tmp.15986'
$m << EOD
0.139183 0.123528 0.120763 0.141436 0.112169 0.126292 0.13726 0.099369
0.111749 0.10021 0.0958233 0.138011 0.109405 0.165114 0.128215 0.151472
EOD
set title "USMoE, k=1.5: load (last epoch, first seed)"
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
