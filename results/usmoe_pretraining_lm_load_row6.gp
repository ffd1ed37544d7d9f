set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_lm_load_row6.png.tmp.22593'
$m << EOD
0.13324 0.10437 0.123169 0.115479 0.158691 0.130615 0.139465 0.0949707
0.128418 0.169922 0.105652 0.124023 0.115112 0.121094 0.0847168 0.151062
EOD
set title "USMoE per position (authors' LM code), k=2: load (last\nepoch, first seed)"
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
