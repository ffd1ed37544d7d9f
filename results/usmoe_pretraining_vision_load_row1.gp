set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_vision_load_row1.png.tmp.15986'
$m << EOD
0.121048 0.178079 0.109903 0.112868 0.0981158 0.126448 0.184881 0.0686581
0.134789 0.0991268 0.0964614 0.130676 0.0593061 0.223392 0.151884 0.104366
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
